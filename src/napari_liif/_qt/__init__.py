"""Everything that imports Qt or napari lives in this package."""
