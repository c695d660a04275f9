from robeval.cli import main

main()
