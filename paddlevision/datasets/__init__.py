from paddlevision.datasets.folder import ImageFolder, ListDataset, collate_skip_bad, extract_lite_data
from paddlevision.datasets.loader import InProcessLoader, make_loader

__all__ = ["ImageFolder", "ListDataset", "collate_skip_bad", "extract_lite_data", "InProcessLoader", "make_loader"]
