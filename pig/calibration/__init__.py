"""Precision variants of a bundle's graphs: fp16 with fp32 islands (``fp16``), INT8 with
explicit Q/DQ calibrated on real data (``int8``, ``data``), their accuracy report against fp32
(``report``) and ``pig-export --calibrate`` (``calibrate.calibrate_bundle``, ``options``).
DESIGN.md §5."""
