"""Tests of the kernel-wait sampler (kernelwaits.py): its reading of /proc, against lines
copied from this machine's /proc during a load test; its counting; and its loop on this
process (a thread held in D state cannot be made without stalling the disk, so that run must
find no wait, and end)."""
import os
import unittest

from crebitos_tools import kernelwaits

# /proc/PID/task/TID/stat and .../stack of the writer thread in an fdatasync, as read on
# 2026-12-03 (kernel 6.18).
STAT = "1144 (crebitos-writer) D 1 1106 1106 0 -1 4194368 3412 0 0 0 344 6 0 0 20 0 7 0 2777640 0 0"
STACK = """[<0>] folio_wait_bit+0x1f1/0x290
[<0>] folio_wait_writeback+0x2b/0x80
[<0>] __filemap_fdatawait_range+0x8b/0xf0
[<0>] file_write_and_wait_range+0x9a/0xb0
[<0>] generic_buffers_fsync_noflush+0x2a/0x90
[<0>] ext4_fsync_nojournal.constprop.0+0x1f/0x60
[<0>] ext4_sync_file+0x1b3/0x340
[<0>] do_fsync+0x38/0x70
[<0>] __x64_sys_fdatasync+0x12/0x20
[<0>] do_syscall_64+0x64/0x360
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
"""
FAULT = """[<0>] folio_wait_bit_common+0x13f/0x340
[<0>] filemap_fault+0x5c8/0xb20
[<0>] __do_fault+0x31/0x150
[<0>] do_fault+0x2c5/0x520
[<0>] __handle_mm_fault+0x7e9/0xfd0
[<0>] handle_mm_fault+0x101/0x330
[<0>] do_user_addr_fault+0x21a/0x690
[<0>] exc_page_fault+0x6c/0x150
[<0>] asm_exc_page_fault+0x26/0x30
"""


class ParseTest(unittest.TestCase):
    def test_stat(self):
        self.assertEqual(kernelwaits.parse_stat(STAT), ("crebitos-writer", "D"))

    def test_a_name_with_spaces_and_parentheses(self):
        self.assertEqual(kernelwaits.parse_stat("7 (a (b) c) S 1 7"), ("a (b) c", "S"))

    def test_stack_of_a_system_call(self):
        self.assertEqual(kernelwaits.where(STACK), ("fdatasync", "folio_wait_bit"))

    def test_stack_of_a_page_fault(self):
        self.assertEqual(kernelwaits.where(FAULT), ("page fault", "folio_wait_bit_common"))

    def test_empty_stack(self):
        self.assertEqual(kernelwaits.where(""), ("?", "?"))


class SamplerTest(unittest.TestCase):
    def test_counts_runs_of_one_wait_per_thread(self):
        sampler = kernelwaits.KernelWaits(lambda: {})
        key = ("api01", "crebitos-writer", "fdatasync", "folio_wait_bit")
        # At the default 10 ms a sample: three rounds in D in a row, one out, one in again: 4 samples, longest run 3; another
        # thread's wait does not break the run.
        for state in "DDDSD":
            sampler.record("api01", "1", key if state == "D" else None)
            sampler.record("api01", "2", ("api01", "NIO-ELT-0-#0", "pwrite64", "x"))
        summary = sampler.stop()
        by_thread = {w["thread"]: w for w in summary["waits"]}
        self.assertEqual(by_thread["crebitos-writer"], {"service": "api01", "thread": "crebitos-writer", "call": "fdatasync",
                                                        "at": "folio_wait_bit", "samples": 4, "ms": 40.0, "longest_ms": 30.0})
        self.assertEqual(by_thread["NIO-ELT-0-#0"]["longest_ms"], 50.0)
        self.assertEqual(kernelwaits.headline(summary),
                         "NIO-ELT-0-#0 50 ms (mostly pwrite64); crebitos-writer 40 ms (mostly fdatasync)")

    def test_samples_a_real_process_and_stops(self):
        sampler = kernelwaits.start(lambda: {"api01": os.getpid()}, interval=0.001)
        for _ in range(200):
            if sampler.samples >= 5:
                break
            sampler.stop_evt.wait(0.01)
        summary = sampler.stop()
        self.assertGreaterEqual(summary["rounds"], 5)
        self.assertFalse(sampler.is_alive())
        self.assertEqual(summary["waits"], [])
        self.assertEqual(kernelwaits.headline(summary), "no thread of the instances was seen waiting in the kernel")


if __name__ == "__main__":
    unittest.main()
