from paddlevision.datasets.folder import ImageFolder, ListDataset, extract_lite_data
from paddlevision.datasets.loader import ImageLoader

__all__ = ["ImageFolder", "ListDataset", "extract_lite_data", "ImageLoader"]
