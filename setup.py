"""Packaging for fastmim. The heavy stack (torch, mmcv with ops, ...) is installed by
tools/setup_env.sh, because mmcv must be built against the installed torch; the
requirements here are what `pip install -e .` can check."""
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version():
    text = (ROOT / 'fastmim' / 'version.py').read_text()
    return re.search(r"__version__ = '([^']+)'", text).group(1)


def read_requirements(name):
    lines = (ROOT / 'requirements' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


setup(
    name='fastmim',
    version=read_version(),
    description='FastMIM: expediting masked image modeling pre-training for vision',
    long_description=(ROOT / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(exclude=('tests', 'tools', 'configs', 'docs')),
    python_requires='>=3.10',
    install_requires=read_requirements('runtime.txt') + read_requirements('openmmlab.txt') + [
        'torch>=2.1', 'torchvision', 'mmcv>=2.0.0,<2.2.0'],
    extras_require={
        'tests': read_requirements('tests.txt'),
        'data': read_requirements('data.txt'),
    },
    # The configs ship in the package as fastmim/.mim/configs, where mmengine looks for
    # `fastmim::` configs (mmpretrain's layout). In the repository that folder is a link to
    # configs/, which an editable install uses as it is; building a wheel follows the link and
    # copies the files.
    package_data={'fastmim': ['.mim/model-index.yml', '.mim/configs/**/*.py']},
    include_package_data=True,
    zip_safe=False,
)
