"""CT studies straight from a PACS export: DICOM headers -> one CT series per study -> NIfTI -> the `cases` table.

The steps, each a module of pure functions over the previous step's values (the command is ``rsuper images import``,
:mod:`train.dicom.cli`):

* :mod:`train.dicom.headers`: walk any folder layout, read each file's header only (pydicom, no pixel data).
* :mod:`train.dicom.geometry`: slice order, spacing from slice positions, gantry tilt, gaps, the RAS affine.
* :mod:`train.dicom.series`: group by study and series, check each series, choose one CT series per study.
* :mod:`train.dicom.convert`: read the chosen series' pixels, rescale to HU, write NIfTI atomically.
* :mod:`train.dicom.importer`: the import itself: join to reports, resume, per-study records, the `cases` rows.
* :mod:`train.dicom.synthetic`: real DICOM series written from arrays (phantoms) for tests and benchmarks.
"""
