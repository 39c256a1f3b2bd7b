//! Adapter 1: redb 4.x — one table u64 -> &[u8], one write transaction per batch,
//! committed with the default durability (Durability::Immediate).
use crate::{Batch, Result, Store};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;

const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");

pub struct RedbStore {
    db: Database,
}

impl Store for RedbStore {
    const NAME: &'static str = "redb";

    fn open(dir: &Path) -> Result<Self> {
        let db = Database::create(dir.join("objects.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(OBJECTS)?;
        tx.commit()?;
        Ok(Self { db })
    }

    fn commit(&mut self, batch: &Batch) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(OBJECTS)?;
            for (id, value) in batch {
                table.insert(*id, value.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load_all(&mut self) -> Result<HashMap<u64, Vec<u8>>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(OBJECTS)?;
        let mut out = HashMap::new();
        for row in table.iter()? {
            let (id, value) = row?;
            out.insert(id.value(), value.value().to_vec());
        }
        Ok(out)
    }
}
