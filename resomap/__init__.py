"""ResoMap: how input resolution changes what an image classifier gets right, costs, and looks at."""

__version__ = "0.1.0"
