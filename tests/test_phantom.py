import numpy as np
import pytest

from meddap.data.phantom import CLASSES, DEFAULT_DEVICES, Device, device_from_config, simulate_case


@pytest.fixture(scope="module")
def cases():
    device = DEFAULT_DEVICES["linear-L12"]
    return {cls: [simulate_case(cls, device, seed=1000 + i, image_size=64) for i in range(12)] for cls in CLASSES}


def mask_extent(mask):
    """Height and width of the lesion body from second moments (thin spicules barely count)."""
    rows, cols = np.nonzero(mask)
    return rows.std(), cols.std()


def test_class_is_decidable_by_shape(cases):
    # Benign: wider than tall; malignant: taller than wide; normal: no lesion at all.
    for case in cases["benign"]:
        height, width = mask_extent(case.lesion_mask)
        assert height < width, case.params
    for case in cases["malignant"]:
        height, width = mask_extent(case.lesion_mask)
        assert height > width, case.params
        assert case.params["n_spicules"] >= 6
    for case in cases["normal"]:
        assert not case.lesion_mask.any()


def test_lesion_intensity_does_not_decide_the_class(cases):
    # Mean grey level inside the lesion overlaps between benign and malignant.
    benign = [c.image[c.lesion_mask].mean() for c in cases["benign"]]
    malignant = [c.image[c.lesion_mask].mean() for c in cases["malignant"]]
    assert min(benign) < max(malignant) and min(malignant) < max(benign)


def test_lesions_are_hypoechoic():
    from scipy.ndimage import binary_dilation, binary_erosion

    device = DEFAULT_DEVICES["linear-L12"]
    for cls in ("benign", "malignant"):
        for seed in range(6):
            case = simulate_case(cls, device, seed=seed, image_size=128)
            core = binary_erosion(case.lesion_mask, iterations=1)
            ring = binary_dilation(case.lesion_mask, iterations=6) & ~binary_dilation(case.lesion_mask, iterations=2)
            rows = np.nonzero(case.lesion_mask)[0]
            ring[rows.max() :, :] = False  # not the posterior shadow/enhancement
            assert case.image[core].mean() < case.image[ring].mean() - 15, (cls, seed)


def test_same_seed_same_image_other_seed_other_image():
    device = DEFAULT_DEVICES["linear-L12"]
    a = simulate_case("benign", device, seed=7, image_size=64).image
    b = simulate_case("benign", device, seed=7, image_size=64).image
    c = simulate_case("benign", device, seed=8, image_size=64).image
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_devices_differ_in_intensity_statistics():
    stats = {}
    for name, device in DEFAULT_DEVICES.items():
        images = [simulate_case("normal", device, seed=s, image_size=64).image.astype(float) for s in range(8)]
        stats[name] = (np.mean([i.mean() for i in images]), np.mean([i.std() for i in images]))
    means = sorted(m for m, _ in stats.values())
    stds = sorted(s for _, s in stats.values())
    # Each pair of devices differs clearly in brightness or in contrast.
    names = list(stats)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (m1, s1), (m2, s2) = stats[names[i]], stats[names[j]]
            assert abs(m1 - m2) > 5 or abs(s1 - s2) > 3, stats
    assert means[-1] - means[0] > 5 and stds[-1] - stds[0] > 3


def test_psf_narrows_with_frequency():
    low = Device("low", center_frequency_mhz=4.0)
    high = Device("high", center_frequency_mhz=12.0)
    assert high.psf_sigmas_mm()[0] < low.psf_sigmas_mm()[0]
    assert high.psf_sigmas_mm()[1] < low.psf_sigmas_mm()[1]
    # Lateral -6 dB width is wavelength x F-number.
    assert np.isclose(high.psf_sigmas_mm()[1] * 2.355, high.wavelength_mm * high.f_number)


def test_speckle_is_coarser_at_low_frequency():
    def correlation_length(device):
        image = simulate_case("normal", device, seed=3, image_size=128).image.astype(float)
        patch = image[40:80, 20:108] - image[40:80, 20:108].mean()
        lag1 = (patch[:, 1:] * patch[:, :-1]).mean() / patch.var()
        return lag1

    assert correlation_length(DEFAULT_DEVICES["convex-C5"]) > correlation_length(DEFAULT_DEVICES["linear-L12"])


def test_device_config_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="phantom.devices.x: unknown acquisition parameter"):
        device_from_config("x", {"centre_freq": 5})
