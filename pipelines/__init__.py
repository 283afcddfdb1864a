"""liqrisk.pipelines"""
