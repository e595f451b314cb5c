"""The standard transfer suites as task cards: Kornblith-12, Tamaazousti-10 and VTAB-1k (the tasks torchvision
or a documented folder layout can provide). Cards live in `tasks/standard/<name>.yaml`, collections in
`tasks/suites/<suite>.yaml`, file-defined splits in `tasks/manifests/`.

Data is read from UNIREP_DATA_ROOT (default ~/.cache/unirep/data) in torchvision's layout or the layout each
module documents. Nothing is downloaded unless UNIREP_ALLOW_DOWNLOAD=1 (the CLI's --download); a task whose data
is absent still lists fine, and loading it raises one line naming the command or URL that provides it.

Example:
    >>> from unirep.tasks import create_task, list_tasks
    >>> list_tasks(suite="kornblith12")[:3]
    ['birdsnap', 'caltech101', 'cifar10']
    >>> task = create_task("cifar10")  # reads <data root>/cifar-10-batches-py when split() is first called
"""

from unirep.tasks.standard import (  # noqa: F401 - imported to register the tasks
    array_tasks,
    folder_tasks,
    multilabel_tasks,
    openood,
    torchvision_tasks,
)
from unirep.tasks.standard._common import ENV_ALLOW_DOWNLOAD, ENV_DATA_ROOT, StandardTask, data_root

__all__ = ["ENV_ALLOW_DOWNLOAD", "ENV_DATA_ROOT", "StandardTask", "data_root"]
