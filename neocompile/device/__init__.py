"""The device side of a package: what must run on the TargetDevice's own operating system.

Per-architecture TVM runtimes and the toolchain that builds them for the device's libc floor, the ELF
checks that prove a package stays within its device's glibc/libstdc++ floors, and runs of packages inside
device-class root filesystems (Debian images under qemu-user).
"""
