from mcs.cli import main

main()
