"""The serial-time accounting of bench/bench_timeline.py (the figure behind the README's
"largest serial stage"), on a made-up timeline."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import bench_timeline  # noqa: E402


class SerialStages(unittest.TestCase):
    def test_moments_with_one_busy_process_go_to_what_it_does(self):
        main, band = 100, 101
        events = [(main, "main", 1.0, 1.0), (main, "numpy", 1.0, 2.0),
                  (main, "_select", 3.0, 6.0), (band, "_select", 3.0, 5.0),
                  (main, "wait", 6.0, 7.0), (band, "_finish", 6.0, 7.0),
                  (band, "wait", 7.0, 8.0),               # an idle band is not busy
                  (main, "exit", 9.0, 9.0)]
        serial = bench_timeline.serial_stages(events, 0.0, 10.0, jobs=2)
        self.assertEqual(serial, {"python": 1.0, "numpy": 1.0, None: 3.0, "_select": 1.0,
                                  "_finish": 1.0, "exit": 1.0})

    def test_nothing_is_serial_while_every_process_works(self):
        main, band = 100, 101
        events = [(main, "main", 0.0, 0.0), (main, "_select", 0.0, 4.0),
                  (band, "_select", 0.0, 4.0), (main, "exit", 4.0, 4.0)]
        self.assertEqual(bench_timeline.serial_stages(events, 0.0, 4.0, jobs=2), {})
        # with three processes asked for, two busy ones leave every moment serial
        self.assertEqual(bench_timeline.serial_stages(events, 0.0, 4.0, jobs=3),
                         {"_select": 4.0})


if __name__ == "__main__":
    unittest.main()
