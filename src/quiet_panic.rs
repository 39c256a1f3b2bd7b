//! Catching a panic without the default hook printing it, for code that
//! reports the panic itself: a behavior that panics becomes one WARN line
//! naming the behavior and the object (and a failed call), a damaged store
//! one error naming the file. Any other panic, on any thread, is printed
//! by whatever hook was installed before, as usual.
//!
//! The first use wraps the process's panic hook once: the wrapper stays
//! silent while the panicking thread is inside [`catch`], and calls the
//! previous hook otherwise. An application that installs its own hook
//! later replaces the wrapper; these panics are then printed again, and
//! still caught.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// How many [`catch`] calls this thread is inside.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`; a panic comes back as `Err` with its message, unprinted.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static WRAP_HOOK: std::sync::Once = std::sync::Once::new();
    WRAP_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(c.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    outcome.map_err(|payload| message(&*payload))
}

/// Runs `f`; a panic is printed by the hook as usual (it is a bug, and its
/// backtrace helps) and comes back as `Err` with its message, so that a
/// node's thread can stop in order instead of vanishing.
pub fn catch_printed<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| message(&*payload))
}

/// A panic payload's message (`panic!` gives a `&str` or a `String`).
fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_its_message_and_nesting_is_fine() {
        assert_eq!(catch(|| 5), Ok(5));
        assert_eq!(
            catch(|| -> u8 { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
        let nested = catch(|| catch(|| -> u8 { panic!("inner") }));
        assert_eq!(nested, Ok(Err("inner".into())));
        assert_eq!(catch(|| -> u8 { panic!("after") }), Err("after".into()));
        assert_eq!(
            catch_printed(|| -> u8 { panic!("printed {}", 2) }),
            Err("printed 2".into())
        );
    }
}
