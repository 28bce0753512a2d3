"""The napari front end: docks over the core library (Qt lives only here)."""
