"""liqrisk.models"""
