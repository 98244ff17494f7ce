"""xenlive: build bootable Xen live ISOs from declarative profiles."""

__version__ = "0.1.0"
