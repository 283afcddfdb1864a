"""liqrisk.features"""
