import sys

from wasteaudit.cli import main

sys.exit(main())
