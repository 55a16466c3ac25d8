"""manifex.pp"""
