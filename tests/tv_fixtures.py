"""Fabricate TINY torchvision datasets on disk for offline tests.

Each ``make_*`` function writes files under ``root`` in exactly the layout that
torchvision 0.29.1's dataset class reads with ``download=False``:

====================  ========================================================
function              torchvision class / layout written under ``root``
====================  ========================================================
make_mnist            MNIST:        MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
make_fashion_mnist    FashionMNIST: FashionMNIST/raw/... (same file names)
make_cifar10          CIFAR10:      cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta
make_cifar100         CIFAR100:     cifar-100-python/train, test, meta
make_flowers102       Flowers102:   flowers-102/jpg/image_XXXXX.jpg, imagelabels.mat, setid.mat
make_oxford_pets      OxfordIIITPet: oxford-iiit-pet/images/*.jpg,
                                    oxford-iiit-pet/annotations/{trainval,test}.txt (+ trimaps/*.png)
make_eurosat          EuroSAT:      eurosat/2750/<ClassName>/<ClassName>_N.jpg
====================  ========================================================

CIFAR10/CIFAR100/Flowers102 verify md5 sums of their files; call
``patch_integrity(monkeypatch)`` before constructing them.

Pixel content: every image of class ``k`` (0-based label, out of ``K`` classes
in the fabricated set) is a uniform grey level ``class_level(k, K)`` plus
uniform integer noise in [-NOISE, NOISE] on every pixel/channel.  The levels
lie in [24, 232], so nothing clips and the image mean stays within about
+-1 of ``class_level`` (a bit more after JPEG), letting a test check that
labels line up with pixels.  All randomness comes from a seeded
``numpy.random.Generator`` (``seed`` argument), so output is deterministic.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

NOISE = 8

MNIST_CLASSES = [
    "0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
    "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine",
]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
# Official CIFAR-100 superclass -> fine classes mapping (fine names in the
# real ``meta`` file are the alphabetical order of all 100 names).
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100_COARSE_CLASSES = sorted(CIFAR100_SUPERCLASSES)
CIFAR100_CLASSES = sorted(n for names in CIFAR100_SUPERCLASSES.values() for n in names)
assert len(CIFAR100_CLASSES) == len(set(CIFAR100_CLASSES)) == 100

# Oxford-IIIT Pet breeds as named in the real image ids. Class id (1-based) is
# the case-insensitive alphabetical rank over all 37; species 1 = cat, 2 = dog;
# breed id is the 1-based rank within the species.
PET_CAT_BREEDS = [
    "Abyssinian", "Bengal", "Birman", "Bombay", "British_Shorthair", "Egyptian_Mau",
    "Maine_Coon", "Persian", "Ragdoll", "Russian_Blue", "Siamese", "Sphynx",
]
PET_DOG_BREEDS = [
    "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "boxer",
    "chihuahua", "english_cocker_spaniel", "english_setter", "german_shorthaired",
    "great_pyrenees", "havanese", "japanese_chin", "keeshond", "leonberger",
    "miniature_pinscher", "newfoundland", "pomeranian", "pug", "saint_bernard", "samoyed",
    "scottish_terrier", "shiba_inu", "staffordshire_bull_terrier", "wheaten_terrier",
    "yorkshire_terrier",
]
PET_BREEDS = sorted(PET_CAT_BREEDS + PET_DOG_BREEDS, key=str.lower)  # index + 1 == class id

EUROSAT_ALL_CLASSES = [
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
]


# --------------------------------------------------------------------------- helpers


def class_level(k: int, num_classes: int) -> int:
    """Grey level (0-255) that images of 0-based class ``k`` are centred on."""
    return int(round(24 + k * 208 / max(num_classes - 1, 1)))


def _pixels(rng: np.random.Generator, k: int, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    noise = rng.integers(-NOISE, NOISE + 1, size=shape)
    return (class_level(k, num_classes) + noise).astype(np.uint8)


def _balanced_labels(rng: np.random.Generator, num_classes: int, n_per_class: int, shuffle: bool) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), n_per_class)
    return rng.permutation(labels) if shuffle else labels


def _save_rgb(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


def _check_n(n_per_class: int) -> None:
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    # IDX format: magic (0, 0, dtype=0x08 ubyte, ndim), big-endian int32 dims, raw data.
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.tobytes())


def patch_integrity(monkeypatch) -> None:
    """Make CIFAR10/CIFAR100/Flowers102 accept fabricated files.

    Patches only the ``check_integrity`` name bound inside the ``cifar`` and
    ``flowers102`` modules so files must still exist but md5 sums are skipped.
    (Patching ``CIFAR10._check_integrity`` alone is not enough:
    ``CIFAR10._load_meta`` calls ``check_integrity(path, md5)`` directly.)
    """
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.flowers102 as tv_flowers102

    # Fabricated files can never match torchvision's hard-coded md5 sums, so check existence only.
    def _exists_only(fpath, md5=None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(tv_cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(tv_flowers102, "check_integrity", _exists_only)


# --------------------------------------------------------------------------- MNIST


def _make_mnist_like(root: Path, folder: str, n_per_class: int, seed: int) -> None:
    _check_n(n_per_class)
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    # torchvision reads the *uncompressed* files (it only checks/reads the name
    # without ".gz"), so no .gz is written.
    for prefix in ("train", "t10k"):
        labels = _balanced_labels(rng, 10, n_per_class, shuffle=True)
        images = np.stack([_pixels(rng, int(k), 10, (28, 28)) for k in labels])
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))


def make_mnist(root: Path, n_per_class: int = 2, *, seed: int = 0) -> None:
    """MNIST(root, train=True/False): 10 classes, 10*n_per_class per split, 28x28 'L'."""
    _make_mnist_like(root, "MNIST", n_per_class, seed)


def make_fashion_mnist(root: Path, n_per_class: int = 2, *, seed: int = 0) -> None:
    """FashionMNIST(root, train=True/False): 10 classes, 10*n_per_class per split, 28x28 'L'."""
    _make_mnist_like(root, "FashionMNIST", n_per_class, seed)


# --------------------------------------------------------------------------- CIFAR


def _cifar_data(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> np.ndarray:
    # Rows of 3072 uint8 = R plane, G plane, B plane of a 32x32 image (CHW order).
    if len(labels) == 0:
        return np.zeros((0, 3072), dtype=np.uint8)
    return np.stack([_pixels(rng, int(k), num_classes, (3, 32, 32)).reshape(-1) for k in labels])


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root: Path, n_per_class: int = 2, *, seed: int = 0) -> None:
    """CIFAR10(root, train=True/False): 10 classes, 10*n_per_class per split, 32x32 RGB.

    The train samples are spread over the five ``data_batch_N`` files (all five
    must exist). Needs ``patch_integrity``.
    """
    _check_n(n_per_class)
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)

    train_labels = _balanced_labels(rng, 10, n_per_class, shuffle=True)
    for i, chunk in enumerate(np.array_split(train_labels, 5), start=1):
        _pickle(base / f"data_batch_{i}", {
            "batch_label": f"training batch {i} of 5",
            "labels": [int(x) for x in chunk],
            "data": _cifar_data(rng, chunk, 10),
            "filenames": [f"fake_{i}_{j}.png" for j in range(len(chunk))],
        })
    test_labels = _balanced_labels(rng, 10, n_per_class, shuffle=True)
    _pickle(base / "test_batch", {
        "batch_label": "testing batch 1 of 1",
        "labels": [int(x) for x in test_labels],
        "data": _cifar_data(rng, test_labels, 10),
        "filenames": [f"fake_test_{j}.png" for j in range(len(test_labels))],
    })
    _pickle(base / "batches.meta", {
        "num_cases_per_batch": int(np.ceil(len(train_labels) / 5)),
        "label_names": list(CIFAR10_CLASSES),
        "num_vis": 3072,
    })


def make_cifar100(root: Path, n_per_class: int = 2, *, seed: int = 0) -> None:
    """CIFAR100(root, train=True/False): 100 classes, 100*n_per_class per split, 32x32 RGB.

    Writes ``fine_labels`` and matching ``coarse_labels``. Needs ``patch_integrity``.
    """
    _check_n(n_per_class)
    rng = np.random.default_rng(seed)
    base = Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    fine_to_coarse = {
        CIFAR100_CLASSES.index(fine): CIFAR100_COARSE_CLASSES.index(coarse)
        for coarse, fines in CIFAR100_SUPERCLASSES.items() for fine in fines
    }
    for split in ("train", "test"):
        labels = _balanced_labels(rng, 100, n_per_class, shuffle=True)
        _pickle(base / split, {
            "filenames": [f"fake_{split}_{j}.png" for j in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": [int(x) for x in labels],
            "coarse_labels": [fine_to_coarse[int(x)] for x in labels],
            "data": _cifar_data(rng, labels, 100),
        })
    _pickle(base / "meta", {
        "fine_label_names": list(CIFAR100_CLASSES),
        "coarse_label_names": list(CIFAR100_COARSE_CLASSES),
    })


# --------------------------------------------------------------------------- Flowers102


def make_flowers102(root: Path, n_per_class: int = 2, *, num_classes: int = 3, size: int = 32,
                    seed: int = 0) -> None:
    """Flowers102(root, split='train'/'val'/'test'): labels 0..num_classes-1 present.

    n_per_class images per class in EACH split (3*num_classes*n_per_class JPEGs,
    size x size RGB). Image ids are 1..N, shuffled over classes/splits like the
    real set. ``ds.classes`` is torchvision's fixed 102-name list; the labels
    used are the first ``num_classes`` of it. Needs ``patch_integrity``.
    """
    from scipy.io import savemat

    _check_n(n_per_class)
    if not 1 <= num_classes <= 102:
        raise ValueError("num_classes must be in 1..102")
    if num_classes * n_per_class < 2:
        # loadmat(squeeze_me=True) turns a 1-element id array into a scalar,
        # which torchvision then fails to iterate.
        raise ValueError("need at least 2 images per split (num_classes * n_per_class >= 2)")
    rng = np.random.default_rng(seed)
    base = Path(root) / "flowers-102"
    jpg = base / "jpg"
    jpg.mkdir(parents=True, exist_ok=True)

    per_split = num_classes * n_per_class
    total = 3 * per_split
    # labels_by_slot: split-major (train, val, test), balanced within each split.
    labels_by_slot = np.concatenate([_balanced_labels(rng, num_classes, n_per_class, False) for _ in range(3)])
    image_ids = rng.permutation(np.arange(1, total + 1))  # slot -> image id
    labels_1based = np.zeros(total, dtype=np.uint8)
    for slot, image_id in enumerate(image_ids):
        k = int(labels_by_slot[slot])
        labels_1based[image_id - 1] = k + 1
        _save_rgb(jpg / f"image_{image_id:05d}.jpg", _pixels(rng, k, num_classes, (size, size, 3)))

    # Ids must be integers: torchvision formats them with ``:05d``.
    split_ids = {
        name: np.sort(image_ids[i * per_split:(i + 1) * per_split]).astype(np.uint16)
        for i, name in enumerate(("trnid", "valid", "tstid"))
    }
    savemat(str(base / "imagelabels.mat"), {"labels": labels_1based.reshape(1, -1)})
    savemat(str(base / "setid.mat"), {k: v.reshape(1, -1) for k, v in split_ids.items()})


# --------------------------------------------------------------------------- Oxford-IIIT Pet


def pet_class_name(breed: str) -> str:
    """Class name torchvision derives from an image-id prefix (e.g. 'american_bulldog' -> 'American Bulldog')."""
    return " ".join(part.title() for part in breed.split("_"))


def make_oxford_pets(root: Path, n_per_class: int = 2, *, num_classes: int = 3, size: int = 32,
                     with_trimaps: bool = True, seed: int = 0) -> None:
    """OxfordIIITPet(root, split='trainval'/'test'): first ``num_classes`` breeds.

    n_per_class images per breed in EACH split; ids ``<breed>_1..n`` are trainval,
    ``<breed>_{n+1}..2n`` are test. Every breed appears in both splits, because
    torchvision builds ``ds.classes`` only from the ids in the split's own file.
    Breeds are taken in class-id order (Abyssinian, american_bulldog,
    american_pit_bull_terrier, basset_hound, beagle, Bengal, ...) so class ids
    are contiguous 1..num_classes. Trimaps (values 1/2/3) are written so
    ``target_types='segmentation'`` works too; torchvision's existence check
    needs only ``images/`` and ``annotations/``.
    """
    _check_n(n_per_class)
    if not 1 <= num_classes <= len(PET_BREEDS):
        raise ValueError(f"num_classes must be in 1..{len(PET_BREEDS)}")
    rng = np.random.default_rng(seed)
    base = Path(root) / "oxford-iiit-pet"
    images = base / "images"
    anns = base / "annotations"
    trimaps = anns / "trimaps"
    for d in (images, anns) + ((trimaps,) if with_trimaps else ()):
        d.mkdir(parents=True, exist_ok=True)

    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for k, breed in enumerate(PET_BREEDS[:num_classes]):
        is_cat = breed in PET_CAT_BREEDS
        species = 1 if is_cat else 2
        breed_id = (PET_CAT_BREEDS if is_cat else PET_DOG_BREEDS).index(breed) + 1
        for i in range(1, 2 * n_per_class + 1):
            image_id = f"{breed}_{i}"
            split = "trainval" if i <= n_per_class else "test"
            lines[split].append(f"{image_id} {k + 1} {species} {breed_id}")
            _save_rgb(images / f"{image_id}.jpg", _pixels(rng, k, num_classes, (size, size, 3)))
            if with_trimaps:
                tri = np.full((size, size), 2, dtype=np.uint8)  # 2 = background
                q = size // 4
                tri[q:size - q, q:size - q] = 3  # 3 = boundary
                tri[q + 1:size - q - 1, q + 1:size - q - 1] = 1  # 1 = pet
                Image.fromarray(tri).save(trimaps / f"{image_id}.png")
    for split, split_lines in lines.items():
        (anns / f"{split}.txt").write_text("\n".join(split_lines) + "\n")


# --------------------------------------------------------------------------- EuroSAT


def make_eurosat(root: Path, n_per_class: int = 2, *,
                 classes: Sequence[str] = ("AnnualCrop", "Forest", "River"), size: int = 64,
                 seed: int = 0) -> None:
    """EuroSAT(root): ImageFolder over ``eurosat/2750/<Class>/<Class>_N.jpg`` (N from 1).

    One split only (EuroSAT has no split argument): len(classes)*n_per_class
    RGB JPEGs of size x size (the real set is 64x64). Labels follow the
    *sorted* class-folder names; pixel level is keyed to that sorted index.
    """
    _check_n(n_per_class)
    classes = sorted(classes)
    if not classes:
        raise ValueError("need at least one class")
    rng = np.random.default_rng(seed)
    data = Path(root) / "eurosat" / "2750"
    for k, name in enumerate(classes):
        for i in range(1, n_per_class + 1):
            _save_rgb(data / name / f"{name}_{i}.jpg", _pixels(rng, k, len(classes), (size, size, 3)))
