import unittest

import greet


class GreetTest(unittest.TestCase):
    def test_greets_by_name(self) -> None:
        self.assertEqual(greet.greet("mesh"), "hello, mesh")


if __name__ == "__main__":
    unittest.main()
