"""``meddap plan``: jobs, images and device-hours of a config from measured rates (cost,
rates.yaml). Outside the library's core: nothing in it is imported by a stage.
"""
