"""semsim_core: the pure library behind semsim (no Apache Beam import).

Records and schemas, input parsing, text normalisation, the embedder, pair mining, clustering and evaluation.
"""
