"""manifex.datasets"""
