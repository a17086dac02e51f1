"""Live views of the mesh computed from what the sidecars expose (`meshctl stat`); pure, I/O in control.cli."""
