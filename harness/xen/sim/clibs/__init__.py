"""Replacement Xen client libraries (libxenevtchn, libxengnttab, libxenctrl) that make
unmodified C backends run on the simulated Xen; built on first use by :mod:`.build`."""
