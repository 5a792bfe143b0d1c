"""The live core: live LIIF zoom without Qt or napari.

* :mod:`.viewport`: camera, lattice and tiles (which samples a view needs, and where they go);
* :mod:`.planes`, :mod:`.prepared`: a source's displayed plane, described plainly, and made
  ready for the engine through the plane codec (:mod:`napari_liif.codec`: intensity maps, the
  fields, values back in data units) and lazy windows;
* :mod:`.keys`: typed tile keys, jobs, requests and the renderer's messages;
* :mod:`.port`: the one protocol through which the core uses the engine;
* :mod:`.batches`: a view's tiles gathered into few, large engine calls;
* :mod:`.renderer`: the thread that renders the newest request (coarse pass first);
* :mod:`.session`: sources, plans, the tile cache and what each view still needs.

The Qt front end (:mod:`napari_liif._qt.controller`) only forwards napari's events to a
:class:`~napari_liif.live.session.Session` and shows what it collects.
"""
