"""Stage 0, the images: listing and splitting a dataset (dataset), loading images (images),
near-duplicate groups (near_duplicates), the ultrasound phantom simulator (phantom), generative
arms and their training rows (arms), classic augmentation (classic) and merged dataset variants
(merge).
"""
