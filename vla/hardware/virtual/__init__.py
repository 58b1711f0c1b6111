"""A virtual arm on a pseudo-terminal: servos that answer byte-exactly, mounted on a simulated twin."""
