#ifndef TOLLGATE_CSQLITE_SHIM_H
#define TOLLGATE_CSQLITE_SHIM_H
// SQLite's C API, for the ledger writer's hot loop only (binding one usage row's values to
// GRDB's prepared statement without building StatementArguments). Everything else uses GRDB.
#include <sqlite3.h>
#endif
