"""liqrisk.serve"""
