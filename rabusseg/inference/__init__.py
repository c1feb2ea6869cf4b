"""Using a trained network: :mod:`~rabusseg.inference.tta` (the shared probability path, TTA),
:mod:`~rabusseg.inference.segmenter` (``Segmenter``: numpy in, mask and maps out),
:mod:`~rabusseg.inference.predict` (files, folders, DICOM -> masks and ``predictions.csv``),
:mod:`~rabusseg.inference.dicom`, :mod:`~rabusseg.inference.ranking` (what to annotate next) and
:mod:`~rabusseg.inference.export` (ONNX and the ONNX Runtime engine).

Submodules are imported on demand so that ``import rabusseg`` stays light.
"""
