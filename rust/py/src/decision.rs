//! `Decision`, the limiter's answer, as a plain C-level Python type.
//!
//! Every acquire returns a new one, so making and freeing it is on the hot path.
//! A `#[pyclass]` instance costs about 40 ns there: PyO3 allocates through
//! `object.__new__` (and, with a free list, a mutex), and frees through a type-slot
//! lookup. This type is a struct allocated with `PyObject_Malloc` and read through
//! getters, about 10 ns (measured with `benches/bench_core.py`). It holds no
//! references to other objects, so it needs no garbage-collector support; it has
//! no constructor and no subclasses, like the `#[pyclass]` it replaces.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use agentrouter_core as core;
use pyo3::exceptions::PyMemoryError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

/// The instance layout: the object header, then the core's decision (`Copy`,
/// nothing to drop).
#[repr(C)]
struct DecisionObject {
    ob_base: ffi::PyObject,
    decision: core::Decision,
}

/// The type object, created once by `init` (before any method that returns a
/// decision can be called) and kept alive for the life of the process.
static TYPE: AtomicPtr<ffi::PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// What methods return to make a Python `Decision`.
pub struct Decision(pub core::Decision);

impl<'py> IntoPyObject<'py> for Decision {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    #[inline(always)]
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tp = TYPE.load(Ordering::Acquire);
        debug_assert!(
            !tp.is_null(),
            "Decision used before the module was initialised"
        );
        // SAFETY: we are attached to the interpreter (`py`), as the object allocator
        // requires. The block is sized for `DecisionObject` and checked for NULL; the
        // payload is written (through a raw pointer, the memory is uninitialised)
        // before the object is published. `tp` is the type made by `init`, which runs
        // at import, before any limiter exists, and is never released (see `TYPE`).
        // `PyObject_Init` sets the type (taking a reference to it: a heap type) and a
        // reference count of 1, which `from_owned_ptr` takes over. `dealloc` undoes
        // exactly this.
        unsafe {
            let obj = ffi::PyObject_Malloc(size_of::<DecisionObject>()).cast::<DecisionObject>();
            if obj.is_null() {
                return Err(PyMemoryError::new_err(()));
            }
            ptr::addr_of_mut!((*obj).decision).write(self.0);
            ffi::PyObject_Init(obj.cast(), tp);
            Ok(Bound::from_owned_ptr(py, obj.cast()))
        }
    }
}

unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: this is the type's `tp_dealloc`: CPython calls it (attached) once, when
    // the last reference to an object made by `into_pyobject` is gone, so nothing can
    // see the object afterwards. The memory came from `PyObject_Malloc` and goes back
    // to `PyObject_Free`; the payload is `Copy` (nothing to drop). The reference to
    // the type that `PyObject_Init` took is released after the memory, as heap types
    // require (the type may be freed with its last reference).
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        ffi::PyObject_Free(obj.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// The decision inside `obj`.
///
/// # Safety
/// `obj` is a live `Decision`: CPython only calls this type's slots on its own
/// instances.
unsafe fn decision<'a>(obj: *mut ffi::PyObject) -> &'a core::Decision {
    // SAFETY: the caller guarantees `obj` is a live instance of this type, i.e. a
    // `DecisionObject` made by `into_pyobject` (`repr(C)`, the header first, so the
    // cast is exact) with an initialised payload that is never written again. The
    // caller holds a reference for the duration of the slot call.
    unsafe { &(*obj.cast::<DecisionObject>()).decision }
}

/// Hands a slot's result to CPython: a new reference, or NULL with the error set.
fn into_ptr(py: Python<'_>, result: PyResult<Bound<'_, PyAny>>) -> *mut ffi::PyObject {
    match result {
        Ok(value) => value.into_ptr(),
        Err(e) => {
            e.restore(py);
            ptr::null_mut()
        }
    }
}

macro_rules! getter {
    ($name:ident, |$d:ident| $value:expr) => {
        unsafe extern "C" fn $name(obj: *mut ffi::PyObject, _: *mut c_void) -> *mut ffi::PyObject {
            // SAFETY: a getter in this type's `tp_getset`: CPython calls it attached,
            // with `obj` an instance of this type (the type cannot be subclassed), so
            // `decision`'s contract holds.
            let (py, $d) = unsafe { (Python::assume_attached(), decision(obj)) };
            into_ptr(py, $value.into_bound_py_any(py))
        }
    };
}

getter!(allowed, |d| d.allowed);
getter!(limit, |d| d.limit);
getter!(remaining, |d| d.remaining);
getter!(reset, |d| d.reset);
getter!(retry_after, |d| d.retry_after);
getter!(reason, |d| d.reason.map(core::Reason::as_str));

/// `Decision(allowed=True, limit=…, …)`, each field as Python shows it.
unsafe extern "C" fn repr(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: this type's `tp_repr`: CPython calls it attached, with `obj` an instance
    // of this type (the type cannot be subclassed), so `decision`'s contract holds.
    let (py, d) = unsafe { (Python::assume_attached(), decision(obj)) };
    let text = || -> PyResult<Bound<'_, PyAny>> {
        let fields = [
            ("allowed", d.allowed.into_bound_py_any(py)?),
            ("limit", d.limit.into_bound_py_any(py)?),
            ("remaining", d.remaining.into_bound_py_any(py)?),
            ("reset", d.reset.into_bound_py_any(py)?),
            ("retry_after", d.retry_after.into_bound_py_any(py)?),
            (
                "reason",
                d.reason.map(core::Reason::as_str).into_bound_py_any(py)?,
            ),
        ];
        let mut shown = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            shown.push(format!("{name}={}", value.repr()?));
        }
        format!("Decision({})", shown.join(", ")).into_bound_py_any(py)
    };
    into_ptr(py, text())
}

/// CPython keeps a pointer to the getter table for the life of the type.
struct GetSet([ffi::PyGetSetDef; 7]);
// SAFETY: `Sync` is missing only because `PyGetSetDef` holds raw pointers. Those
// point to static C strings and functions (and a NULL closure); the table is never
// written (it is a `static`, not `static mut`) and CPython only reads it, so sharing
// it between threads is sound.
unsafe impl Sync for GetSet {}

const fn property(name: &'static CStr, get: ffi::getter, doc: &'static CStr) -> ffi::PyGetSetDef {
    ffi::PyGetSetDef {
        name: name.as_ptr(),
        get: Some(get),
        set: None,
        doc: doc.as_ptr(),
        closure: ptr::null_mut(),
    }
}

static GETSET: GetSet = GetSet([
    property(c"allowed", allowed, c"True when the request may proceed."),
    property(
        c"limit",
        limit,
        c"R, the bucket's capacity; None when unlimited.",
    ),
    property(
        c"remaining",
        remaining,
        c"Whole requests that could be admitted right now after this decision.",
    ),
    property(
        c"reset",
        reset,
        c"Unix time (seconds, rounded up) when the bucket is full again.",
    ),
    property(
        c"retry_after",
        retry_after,
        c"Seconds until this request would be admitted; refusals only, None when it never would.",
    ),
    property(
        c"reason",
        reason,
        c"None when allowed; 'rate_limited' or 'cost_exceeds_limit'.",
    ),
    ffi::PyGetSetDef {
        name: ptr::null(),
        get: None,
        set: None,
        doc: ptr::null(),
        closure: ptr::null_mut(),
    },
]);

pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let mut slots = [
        ffi::PyType_Slot {
            slot: ffi::Py_tp_doc,
            pfunc: c"The limiter's answer. A refusal is a value, never an exception."
                .as_ptr()
                .cast_mut()
                .cast(),
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_dealloc,
            pfunc: dealloc as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_repr,
            pfunc: repr as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_getset,
            pfunc: GETSET.0.as_ptr().cast_mut().cast(),
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: ptr::null_mut(),
        },
    ];
    let mut spec = ffi::PyType_Spec {
        name: c"agentrouter._core.Decision".as_ptr(),
        basicsize: size_of::<DecisionObject>() as _,
        itemsize: 0,
        // Neither instantiable nor subclassable from Python, and its attributes
        // cannot be replaced: only the core makes decisions.
        flags: (ffi::Py_TPFLAGS_DEFAULT
            | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION
            | ffi::Py_TPFLAGS_IMMUTABLETYPE) as _,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: attached (`py`); a valid spec: the slot array ends with the `0` slot,
    // every slot has the signature CPython expects for it, `basicsize` is our layout,
    // and the strings are static C strings. CPython copies the spec and the slots
    // during the call; what it keeps (the getter table, the doc) is `static`.
    // `from_owned_ptr_or_err` takes the new reference or the error.
    let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
    // The static keeps this reference: the type outlives every instance.
    TYPE.store(tp.clone().into_ptr().cast(), Ordering::Release);
    m.add("Decision", tp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::exceptions::PyTypeError;
    use pyo3::types::{IntoPyDict, PyModule};

    #[test]
    fn the_hand_made_type_reads_frees_and_refuses_construction() {
        Python::initialize();
        Python::attach(|py| {
            let m = PyModule::new(py, "_core").unwrap();
            init(&m).unwrap();
            let refused = core::Decision {
                allowed: false,
                limit: Some(3),
                remaining: Some(0),
                reset: Some(1_700_000_020),
                retry_after: Some(1.5),
                reason: Some(core::Reason::RateLimited),
            };
            let d = Decision(refused).into_pyobject(py).unwrap();
            let field = |name: &str| d.getattr(name).unwrap().repr().unwrap().to_string();
            assert_eq!(field("allowed"), "False");
            assert_eq!(field("limit"), "3");
            assert_eq!(field("remaining"), "0");
            assert_eq!(field("reset"), "1700000020");
            assert_eq!(field("retry_after"), "1.5");
            assert_eq!(field("reason"), "'rate_limited'");
            assert_eq!(
                d.repr().unwrap().to_string(),
                "Decision(allowed=False, limit=3, remaining=0, reset=1700000020, \
                 retry_after=1.5, reason='rate_limited')"
            );
            let unlimited = Decision(core::Decision::UNLIMITED)
                .into_pyobject(py)
                .unwrap();
            assert!(unlimited.getattr("limit").unwrap().is_none());

            // Every object takes one reference to the type and `dealloc` gives it
            // back: after many made and freed, the type's count is where it was.
            let tp = m.getattr("Decision").unwrap();
            // SAFETY: `tp` is a live object; reading its reference count is a load.
            let before = unsafe { ffi::Py_REFCNT(tp.as_ptr()) };
            for _ in 0..10_000 {
                drop(Decision(refused).into_pyobject(py).unwrap());
            }
            // SAFETY: as above.
            assert_eq!(unsafe { ffi::Py_REFCNT(tp.as_ptr()) }, before);

            // Only the core makes decisions: no constructor, no subclass.
            assert!(tp.call0().unwrap_err().is_instance_of::<PyTypeError>(py));
            let subclass = py.run(
                c"class D(T): pass",
                None,
                Some(&[("T", &tp)].into_py_dict(py).unwrap()),
            );
            assert!(subclass.unwrap_err().is_instance_of::<PyTypeError>(py));
        });
    }
}
