//! A small Battleship board.
//!
//! A `board` object's state is its ship cells, set with `set_state`: a list
//! of `Pair(Nat x, Nat y)`, each still afloat. Input `List[Str "fire", Nat
//! x, Nat y]` answers `Str "miss"`, `Str "hit"`, or `Str "sunk"` when the
//! last cell goes down; a hit removes the cell from the state. Input
//! `List[Str "place", Pair(x, y)...]` replaces the ships and answers the
//! number of cells. Anything else answers `Str "board: unexpected input"`.
//! Every ship is one fleet: "sunk" means no cell is left afloat.

use crate::prog;
use crate::vm::{done, get_state, set_state, BehaviorRegistry, Program, Val};

/// `Pair(Nat x, Nat y)`.
pub fn cell(x: u64, y: u64) -> Val {
    Val::pair(Val::Nat(x), Val::Nat(y))
}

/// `List[Str "fire", Nat x, Nat y]`.
pub fn fire(x: u64, y: u64) -> Val {
    Val::List(vec![Val::str("fire"), Val::Nat(x), Val::Nat(y)])
}

/// `List[Str "place", cells...]`.
pub fn place(cells: &[(u64, u64)]) -> Val {
    let mut items = vec![Val::str("place")];
    items.extend(cells.iter().map(|&(x, y)| cell(x, y)));
    Val::List(items)
}

pub fn board(input: Val) -> Program {
    let Val::List(mut items) = input else {
        return done(Val::str("board: unexpected input"));
    };
    match items.first().and_then(Val::as_str) {
        Some("place") => {
            let ships = items.split_off(1);
            let n = ships.len() as u64;
            set_state(ships).then(done(Val::Nat(n)))
        }
        Some("fire") => match items[1..] {
            [Val::Nat(x), Val::Nat(y)] => prog! {
                let ships <- get_state();
                let Val::List(mut ships) = ships else { return done(Val::str("board: bad state")) };
                let shot = cell(x, y);
                match ships.iter().position(|c| *c == shot) {
                    None => done(Val::str("miss")),
                    Some(i) => {
                        ships.swap_remove(i);
                        let verdict = if ships.is_empty() { "sunk" } else { "hit" };
                        set_state(ships).then(done(Val::str(verdict)))
                    }
                }
            },
            _ => done(Val::str("board: unexpected input")),
        },
        _ => done(Val::str("board: unexpected input")),
    }
}

/// Registers `"board"`.
pub fn register(reg: &mut BehaviorRegistry) {
    reg.register("board", board);
}
