from fastroute.cli import main

raise SystemExit(main())
