from hostd.cli import main

raise SystemExit(main())
