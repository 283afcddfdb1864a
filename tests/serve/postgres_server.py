"""A throwaway PostgreSQL server for tests, from the binaries of Debian's ``postgresql`` package.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user (the
Debian package creates it) or, failing that, ``nobody``, and every server command runs through
``runuser``. The server listens on a Unix socket in its own fresh directory only (no TCP port,
so no port clash with anything else on the machine), trusts local connections and runs with
``fsync=off``: the tests check visibility and ordering, not survival of a power cut.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "liqrisk"


class Unavailable(RuntimeError):
    """No server can be started here; the message says why."""


@dataclass
class Server:
    """A running server; ``url`` is a SQLAlchemy URL for its ``postgres`` database."""

    url: str
    root: Path
    bindir: Path
    run_as: str | None

    def stop(self) -> None:
        """Stop at once and delete the cluster."""
        _run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            self.run_as,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def find_bindir() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``: the newest Debian version, else ``PATH``."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    raise Unavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found; install Debian's postgresql "
        "package (.ci/postgres.sh) or set LIQRISK_TEST_POSTGRES_URL"
    )


def start() -> Server:
    """Initialise and start a fresh cluster; raise :class:`Unavailable` if that cannot be done."""
    bindir = find_bindir()
    run_as = _unprivileged_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="lqpg-"))  # short: a socket path has ~100 bytes
    if run_as is not None:
        user = pwd.getpwnam(run_as)
        os.chown(root, user.pw_uid, user.pw_gid)
    data, log = root / "data", root / "server.log"
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
            run_as,
        )
        options = f"-c listen_addresses='' -k {root} -c fsync=off -c full_page_writes=off"
        _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "30",
                "-o",
                options,
                "start",
            ],
            run_as,
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(
            f"could not start PostgreSQL from {bindir}: {exc}\n{detail}\n{tail}"
        ) from exc
    url = f"postgresql+psycopg://{USER}@/postgres?host={root}"
    return Server(url, root, bindir, run_as)


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return name
    raise Unavailable("running as root, but no 'postgres'/'nobody' user or no runuser to drop to")


def _run(cmd: list[str], run_as: str | None, *, check: bool = True) -> None:
    if run_as is not None:
        cmd = ["runuser", "-u", run_as, "--", *cmd]
    subprocess.run(
        cmd,
        check=check,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        stdin=subprocess.DEVNULL,
    )
