"""The embedded offline suite: real image datasets that ship inside Debian and PyPI packages, so the whole
pipeline runs and is tested without network (what provides each: the `provides` field of its card).

Each module registers one task; its card is `tasks/<name>.yaml` and its published split manifest is
`tasks/manifests/<name>.json` (regenerate with `python -m unirep.tasks.offline.write_manifests`). Every data
location can be overridden with an environment variable (see each module), e.g. UNIREP_FASHION_MNIST_DIR.
"""

from unirep.tasks.offline import (  # noqa: F401 - imported to register the tasks
    animal_mnist,
    fashion_mnist,
    lfw_faces,
    opencv_digits,
    skimage_textures,
    sklearn_digits,
    textile_defects,
)
