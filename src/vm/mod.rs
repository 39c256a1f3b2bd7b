//! The avm core: values, programs, a sans-IO interpreter.
pub mod ids;
pub mod value;

pub use ids::{ChainId, ControllerId, CounterExhausted, FreshIdGen, MachineId, ObjectId, TxId};
pub use value::Val;
