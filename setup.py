"""nser: noise-robust speech emotion recognition from Whisper (ASR) representations.

Install from the checkout (editable, so the model-card template and dataset scripts stay next to the code):
    pip install -r requirements.txt && pip install --no-deps -e .
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))]


setup(
    name="nser",
    version="0.1.0",
    description="Noise-robust speech emotion recognition from Whisper encoder and decoder representations",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    py_modules=["configuration_nser", "modeling_nser", "feature_extraction_nser", "run_nser", "handler"],
    packages=find_packages(include=["nser", "nser.*", "dataset_scripts", "dataset_scripts.*"]),
    install_requires=requirements("requirements.txt"),
    extras_require={
        "bench": requirements("bench/requirements.txt"),
        "demo": requirements("demo/requirements.txt"),
        # what the test suite exercises: requirements-dev.txt and the files it includes
        "dev": requirements("requirements-dev.txt") + requirements("bench/requirements.txt")
        + requirements("demo/requirements.txt") + requirements("demo/requirements-test.txt"),
    },
    entry_points={"console_scripts": ["nser-train=run_nser:main"]},
)
