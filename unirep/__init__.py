"""unirep: how universal is an image representation?"""
__version__ = "0.1.0"
