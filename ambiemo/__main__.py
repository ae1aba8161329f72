from ambiemo.cli import main

main()
