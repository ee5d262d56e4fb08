"""ResoMap: how input resolution changes what an image classifier gets right, costs, and looks at."""
