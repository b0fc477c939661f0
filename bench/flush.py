#!/usr/bin/env python3
"""What one durable write costs this machine's disk: 4 KiB writes, each made
durable, in a tight loop; wall and CPU time (mostly the kernel's) per write.
Appending grows the file (as a fresh SQLite WAL does); overwriting does not
(as a WAL restarted after a checkpoint does, or a preallocated journal).
    python3 bench/flush.py [DIR]      (DIR on the disk that holds the trail)
"""
import mmap, os, resource, sys, tempfile, time

N = 2000
d = sys.argv[1] if len(sys.argv) > 1 else "."

def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime

def measure(name, fd, write):
    t0, c0 = time.perf_counter(), cpu()
    for i in range(N):
        write(fd, i)
    t1, c1 = time.perf_counter(), cpu()
    print("%-30s wall %6.1f µs, cpu %5.1f µs per write" % (name, (t1 - t0) / N * 1e6, (c1 - c0) / N * 1e6))

buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
buf.write(b"x" * 4096)
with tempfile.TemporaryDirectory(dir=d) as tmp:
    path = os.path.join(tmp, "flush.test")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    measure("append + fdatasync", fd, lambda fd, i: (os.write(fd, buf), os.fdatasync(fd)))
    measure("overwrite + fdatasync", fd, lambda fd, i: (os.pwrite(fd, buf, 0), os.fdatasync(fd)))
    os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    measure("O_DIRECT|O_DSYNC overwrite", fd, lambda fd, i: os.pwrite(fd, buf, i * 4096))
    os.close(fd)
