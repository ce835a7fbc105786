"""The floor every stage stands on; imports nothing else of meddap.

atomic (writes that never leave half a file), seeding (derived seeds), devices (CPU/CUDA and
precision), gpu_slots (one GPU, or a slot of one, per local job), rulescript (the start of every
rule script), params (settings through Snakemake ``params``), markdown (tables), versions (library
versions recorded beside models and shards).
"""
