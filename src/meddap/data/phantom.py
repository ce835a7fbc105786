"""Breast-ultrasound phantom simulator (the embedded default's data).

Each image is simulated the way a B-mode scanner forms it, not painted:

1. Tissue model: depth layers (skin, subcutaneous fat, fibroglandular tissue, retromammary fat,
   pectoralis muscle) with undulating boundaries, each with a backscatter *echogenicity* and an
   *attenuation* coefficient (dB/cm/MHz).
2. Lesion by class, after BI-RADS: benign is oval, circumscribed and wider-than-tall, sometimes
   with less attenuation than its surroundings (posterior enhancement); malignant is irregular
   with spicules, taller-than-wide, usually more attenuating (posterior shadowing); normal has
   no lesion. Lesion echogenicity is drawn from the same distribution for both lesion classes,
   so the class is carried by shape, not by intensity.
3. Acquisition (the *device*): fully developed speckle from circular complex Gaussian
   scatterers scaled by echogenicity and by the round-trip attenuation integrated along depth,
   convolved with the transducer's point-spread function (IQ baseband: axial width from the
   centre frequency and fractional bandwidth, lateral width from wavelength x F-number),
   electronic noise, envelope detection, time-gain compensation, gain and log compression into
   the device's dynamic range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from meddap.runtime.seeding import derive_seed

SPEED_OF_SOUND_M_S = 1540.0
CLASSES = ("benign", "malignant", "normal")
# Echo level shown as white: speckle peaks of tissue with echogenicity 1 (about 6 dB over its RMS).
DISPLAY_REFERENCE_DB = 6.0


@dataclass(frozen=True)
class Device:
    """Acquisition parameters of one (simulated) scanner and transducer."""

    name: str
    center_frequency_mhz: float = 10.0
    fractional_bandwidth: float = 0.5
    f_number: float = 2.0
    field_of_view_mm: float = 32.0
    tgc_fraction: float = 0.9
    gain_db: float = 0.0
    dynamic_range_db: float = 50.0
    noise_db: float = -62.0

    @property
    def wavelength_mm(self) -> float:
        return SPEED_OF_SOUND_M_S / (self.center_frequency_mhz * 1e6) * 1e3

    def psf_sigmas_mm(self) -> tuple[float, float]:
        """Axial and lateral standard deviations of the PSF's Gaussian envelope (mm).

        Axial: a Gaussian pulse whose -6 dB fractional bandwidth is ``fractional_bandwidth``
        has a spectral sigma of B*f0/(2*sqrt(2 ln 2)); its time envelope sigma is the inverse
        (1/(2*pi*sigma_f)), halved for the round trip. Lateral: the -6 dB beam width is about
        wavelength x F-number (FWHM = 2.355 sigma).
        """
        f0_hz = self.center_frequency_mhz * 1e6
        sigma_f = self.fractional_bandwidth * f0_hz / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        sigma_t = 1.0 / (2.0 * math.pi * sigma_f)
        axial_mm = SPEED_OF_SOUND_M_S * sigma_t / 2.0 * 1e3
        lateral_mm = self.wavelength_mm * self.f_number / 2.355
        return axial_mm, lateral_mm


DEFAULT_DEVICES = {
    "linear-L12": Device("linear-L12"),
    "linear-L7": Device(
        "linear-L7",
        center_frequency_mhz=6.0,
        fractional_bandwidth=0.6,
        f_number=2.5,
        tgc_fraction=0.7,
        gain_db=5.0,
        dynamic_range_db=45.0,
        noise_db=-55.0,
    ),
    "convex-C5": Device(
        "convex-C5",
        center_frequency_mhz=4.0,
        fractional_bandwidth=0.7,
        f_number=3.5,
        field_of_view_mm=36.0,
        tgc_fraction=1.1,
        gain_db=-4.0,
        dynamic_range_db=65.0,
        noise_db=-68.0,
    ),
}


@dataclass
class PhantomCase:
    """One simulated image with its ground truth."""

    image: np.ndarray  # uint8, (size, size)
    label: str
    lesion_mask: np.ndarray  # bool at output size; all False for normal
    params: dict = field(default_factory=dict)


def _smooth_curve(rng: np.random.Generator, n: int, amplitude: float, correlation: float) -> np.ndarray:
    """A random smooth 1-D profile (for undulating layer boundaries), zero mean."""
    from scipy.ndimage import gaussian_filter  # scipy loads on first use: config validation imports this module

    noise = rng.standard_normal(n)
    curve = gaussian_filter(noise, sigma=correlation * n, mode="wrap")
    curve -= curve.mean()
    scale = np.abs(curve).max() or 1.0
    return curve / scale * amplitude


def _tissue_layers(
    rng: np.random.Generator, depth_mm: np.ndarray, lateral_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Echogenicity and attenuation maps of normal breast tissue, plus the glandular-layer mask."""
    from scipy.ndimage import gaussian_filter

    n_lat = lateral_mm.shape[1]
    skin = 1.6 + _smooth_curve(rng, n_lat, 0.3, 0.15)
    fat = skin + rng.uniform(3.0, 7.0) + _smooth_curve(rng, n_lat, 1.5, 0.12)
    gland = fat + rng.uniform(13.0, 17.0) + _smooth_curve(rng, n_lat, 2.0, 0.1)
    retro = gland + rng.uniform(1.5, 3.5) + _smooth_curve(rng, n_lat, 0.6, 0.15)

    # (echogenicity, attenuation dB/cm/MHz) per layer, with per-image variation.
    layers = [
        (skin, rng.uniform(0.8, 1.0), 1.2),
        (fat, rng.uniform(0.04, 0.08), 0.6),
        (gland, rng.uniform(0.55, 0.8), 0.8),
        (retro, rng.uniform(0.04, 0.07), 0.6),
    ]
    echo = np.full(depth_mm.shape, rng.uniform(0.12, 0.22))  # pectoralis muscle
    atten = np.full(depth_mm.shape, 1.0)
    for boundary, echogenicity, attenuation in reversed(layers):
        above = depth_mm < boundary[None, :]
        echo[above] = echogenicity
        atten[above] = attenuation

    # Muscle fibres: thin hyperechoic striations parallel to the chest wall.
    muscle = depth_mm >= retro[None, :]
    striation = 0.5 + 0.5 * np.cos(2 * np.pi * (depth_mm - retro[None, :]) / rng.uniform(0.9, 1.4))
    echo = np.where(muscle, echo * (0.6 + 0.8 * striation**4), echo)

    # Glandular heterogeneity (lobules, ducts) as a low-frequency multiplicative texture.
    glandular = (depth_mm >= fat[None, :]) & (depth_mm < gland[None, :])
    texture = gaussian_filter(rng.standard_normal(depth_mm.shape), sigma=depth_mm.shape[0] / 40)
    texture /= texture.std() or 1.0
    echo = np.where(glandular, echo * np.exp(0.35 * texture), echo)

    # Specular interfaces: bright thin lines at the fascia between layers.
    pixel_mm = depth_mm[1, 0] - depth_mm[0, 0]
    for boundary in (skin, fat, gland, retro):
        distance = np.abs(depth_mm - boundary[None, :])
        echo += 0.6 * np.exp(-0.5 * (distance / (1.2 * pixel_mm)) ** 2)
    return echo, atten, glandular


def _lesion_mask(
    rng: np.random.Generator,
    label: str,
    depth_mm: np.ndarray,
    lateral_mm: np.ndarray,
    glandular: np.ndarray,
    fov_mm: float,
) -> tuple[np.ndarray, dict]:
    """Lesion mask with a class-specific shape; returns it with the drawn shape parameters."""
    if label == "benign":
        half_width = rng.uniform(3.8, 6.5)
        aspect = rng.uniform(0.45, 0.75)  # height / width < 1: wider-than-tall
        harmonics = [(k, rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)) for k in (2, 3)]
        spicules: list[tuple[float, float]] = []
        tilt = rng.uniform(-0.2, 0.2)
    else:
        half_width = rng.uniform(2.5, 4.6)
        aspect = rng.uniform(1.25, 1.8)  # taller-than-wide
        harmonics = [(k, rng.uniform(0.04, 0.12), rng.uniform(0, 2 * np.pi)) for k in range(3, 9)]
        spicules = [(rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.8)) for _ in range(rng.integers(6, 13))]
        tilt = rng.uniform(-0.15, 0.15)
    half_height = half_width * aspect

    # Centre inside the glandular layer, away from the lateral edges.
    rows, cols = np.nonzero(glandular)
    margin = half_width + 2.0
    ok = (lateral_mm[rows, cols] > margin) & (lateral_mm[rows, cols] < fov_mm - margin)
    pick = rng.integers(0, int(ok.sum()))
    centre_z = float(depth_mm[rows[ok][pick], cols[ok][pick]])
    centre_z = float(np.clip(centre_z, half_height + 7.0, fov_mm - half_height - 6.0))
    centre_x = float(lateral_mm[rows[ok][pick], cols[ok][pick]])

    dz, dx = depth_mm - centre_z, lateral_mm - centre_x
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)
    u = (dx * cos_t + dz * sin_t) / half_width
    v = (-dx * sin_t + dz * cos_t) / half_height
    radius = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = np.ones_like(radius)
    for order, amplitude, phase in harmonics:
        boundary += amplitude * np.cos(order * theta + phase)
    for angle, length in spicules:
        gap = np.angle(np.exp(1j * (theta - angle)))
        boundary += length * np.exp(-0.5 * (gap / 0.05) ** 2)
    mask = radius <= boundary
    params = {
        "half_width_mm": half_width,
        "half_height_mm": half_height,
        "aspect_height_over_width": aspect,
        "n_spicules": len(spicules),
        "centre_depth_mm": centre_z,
        "centre_lateral_mm": centre_x,
        "tilt_rad": tilt,
    }
    return mask, params


def _psf(device: Device, pixel_mm: float) -> np.ndarray:
    """Complex IQ point-spread function sampled on the simulation grid."""
    sigma_z, sigma_x = device.psf_sigmas_mm()
    half_z = max(2, int(math.ceil(4 * sigma_z / pixel_mm)))
    half_x = max(2, int(math.ceil(4 * sigma_x / pixel_mm)))
    z = np.arange(-half_z, half_z + 1) * pixel_mm
    x = np.arange(-half_x, half_x + 1) * pixel_mm
    envelope = np.exp(-0.5 * (z[:, None] / sigma_z) ** 2 - 0.5 * (x[None, :] / sigma_x) ** 2)
    # Residual phase after demodulation: a Gaussian pulse has none; keep the kernel complex so
    # that interference between neighbouring scatterers (speckle) is modelled.
    return envelope.astype(np.complex128) / np.sqrt((envelope**2).sum())


def simulate_case(
    label: str,
    device: Device,
    seed: int,
    image_size: int = 128,
    oversample: int = 2,
) -> PhantomCase:
    """Simulate one B-mode image of class ``label`` acquired with ``device``."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import fftconvolve

    if label not in CLASSES:
        raise ValueError(f"unknown phantom class {label!r}; expected one of {CLASSES}")
    rng = np.random.default_rng(seed)
    grid = image_size * oversample
    fov = device.field_of_view_mm
    pixel_mm = fov / grid
    axis = (np.arange(grid) + 0.5) * pixel_mm
    depth_mm, lateral_mm = np.meshgrid(axis, axis, indexing="ij")

    echo, atten, glandular = _tissue_layers(rng, depth_mm, lateral_mm)
    params: dict = {"label": label, "device": device.name, "seed": seed}
    mask = np.zeros_like(glandular)
    if label != "normal":
        mask, shape = _lesion_mask(rng, label, depth_mm, lateral_mm, glandular, fov)
        params.update(shape)
        # Same echogenicity distribution for both lesion classes: intensity does not tell them apart.
        lesion_echo = rng.uniform(0.01, 0.12) * float(np.median(echo[glandular]))
        soft = gaussian_filter(mask.astype(float), sigma=0.15 / pixel_mm)
        echo = echo * (1 - soft) + lesion_echo * soft
        if label == "benign":
            factor = rng.uniform(0.15, 0.5) if rng.random() < 0.6 else 1.0  # enhancement
        else:
            factor = rng.uniform(1.6, 3.0) if rng.random() < 0.8 else 1.0  # shadowing
        atten = atten * (1 - soft) + atten * factor * soft
        params["posterior_attenuation_factor"] = factor

    # Round-trip attenuation integrated along depth (dB), applied to the scatterers' echoes.
    f0 = device.center_frequency_mhz
    attenuation_db = 2.0 * np.cumsum(atten * f0 * pixel_mm / 10.0, axis=0)
    scatterers = (rng.standard_normal(echo.shape) + 1j * rng.standard_normal(echo.shape)) / math.sqrt(2)
    rf = scatterers * np.sqrt(echo) * 10 ** (-attenuation_db / 20.0)
    iq = fftconvolve(rf, _psf(device, pixel_mm), mode="same")
    noise_amp = 10 ** (device.noise_db / 20.0)
    iq = iq + noise_amp * (rng.standard_normal(iq.shape) + 1j * rng.standard_normal(iq.shape)) / math.sqrt(2)

    envelope = np.abs(iq)
    # Time-gain compensation: the scanner's depth gain against an assumed 0.7 dB/cm/MHz tissue.
    tgc_db = device.tgc_fraction * 2.0 * 0.7 * f0 * depth_mm / 10.0
    envelope_db = 20 * np.log10(envelope + 1e-12) + tgc_db + device.gain_db
    # Log compression: [-dynamic_range, 0] dB (re the display reference, speckle peaks of the
    # brightest tissue) onto grey levels [0, 255].
    relative_db = envelope_db - DISPLAY_REFERENCE_DB
    display = np.clip((relative_db + device.dynamic_range_db) / device.dynamic_range_db, 0.0, 1.0)
    display = display.reshape(image_size, oversample, image_size, oversample).mean(axis=(1, 3))
    image = np.round(display * 255.0).astype(np.uint8)
    small_mask = mask.reshape(image_size, oversample, image_size, oversample).mean(axis=(1, 3)) >= 0.5
    return PhantomCase(image=image, label=label, lesion_mask=small_mask, params=params)


# Parameters that divide or set a scale (wavelength, PSF widths, pixel size, log range): zero or less breaks physics.
POSITIVE_PARAMETERS = (
    "center_frequency_mhz",
    "fractional_bandwidth",
    "f_number",
    "field_of_view_mm",
    "dynamic_range_db",
)


def device_from_config(name: str, overrides: dict | None, where: str | None = None) -> Device:
    """A Device from a default by name, with config overrides (or a wholly configured one).

    ``where`` names the overrides' origin in errors (default: the config key ``phantom.devices.<name>``).
    A value that is not a finite number, or one of POSITIVE_PARAMETERS that is not positive, is a
    ValueError here rather than a numpy error (or silently wrong images) mid-simulation.
    """
    where = where or f"phantom.devices.{name}"
    base = DEFAULT_DEVICES.get(name, Device(name))
    values = asdict(base)
    unknown = set(overrides or {}) - set(values)
    if unknown:
        raise ValueError(
            f"{where}: unknown acquisition parameter(s) {sorted(unknown)}; "
            f"known: {sorted(k for k in values if k != 'name')}"
        )
    for key, value in (overrides or {}).items():
        # bool is an int to Python, but true/false for a frequency is a mistake
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: {key} is {value!r}; give a number")
        if key in POSITIVE_PARAMETERS and value <= 0:
            raise ValueError(f"{where}: {key} is {value}; it must be positive")
    values.update(overrides or {})
    values["name"] = name
    return Device(**values)


def simulate_device_dataset(
    out_dir: Path,
    device: Device,
    counts: dict[str, int],
    seed: int,
    image_size: int = 128,
    progress: bool = True,
) -> list[dict]:
    """Write ``<out_dir>/<class>/<class>_<NNNN>.png`` for each class; returns one record per image."""
    from PIL import Image
    from tqdm import tqdm

    jobs = [(label, index) for label, n in counts.items() for index in range(n)]
    records = []
    for label, index in tqdm(jobs, desc=f"phantom {device.name}", disable=not progress):
        case = simulate_case(label, device, derive_seed(seed, "phantom", device.name, label, index), image_size)
        target = out_dir / label / f"{label}_{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(case.image, mode="L").save(target)
        records.append({"path": str(target), **case.params})
    return records
