"""rsjax: a JAX/Flax toolkit for ResNet-RS scaling studies."""

import pathlib
import re

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"', (_HERE / "rsjax" / "__init__.py").read_text()
).group(1)

# Pinned to a set proven to install and work together on CPU (Python 3.11).
INSTALL_REQUIRES = [
    "jax[cpu]==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",  # TensorBoard event files (tf.summary)
    "numpy==2.4.6",
    "protobuf==7.36.2",
    "absl-py==2.5.1",
    "etils[epath]==1.15.0",
    "importlib-resources==7.1.0",  # etils.epath imports it lazily (tfds builders need it)
    "matplotlib==3.11.2",
    "pandas==3.1.1",
    "tqdm==4.70.1",
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "ruff==0.17.6",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setup(
    name="rsjax",
    version=_VERSION,
    description="ResNet-RS in JAX/Flax: models, sharded training, scaling sweeps, Pareto analysis.",
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["rsjax", "rsjax.*"]),
    package_data={"rsjax.paper_tables": ["*.csv"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["rsjax = rsjax.cli:main"]},
)
