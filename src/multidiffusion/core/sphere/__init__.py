"""The whole sphere (docs/sphere.md): an equirectangular latent canvas seen through perspective views.

- :mod:`~multidiffusion.core.sphere.projection`: canvas cells ↔ directions, view orientations, gnomonic rays.
- :mod:`~multidiffusion.core.sphere.orientations`: a covering set of view orientations, one at each pole.
- :mod:`~multidiffusion.core.sphere.density`: the canvas density that keeps a view's noise white, and the fov for it.
- :mod:`~multidiffusion.core.sphere.maps`: each view's F_i as an index map, the cells no view reads, noise figures.
- :mod:`~multidiffusion.core.sphere.tasks`: the sphere's task list for the one engine, and its post-step fill.
- :mod:`~multidiffusion.core.sphere.reproject`: finished canvases seen as perspective views (measurement).
"""
