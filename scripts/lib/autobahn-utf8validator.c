/*
 * A drop-in for wsaccel 0.6.3's wsaccel.utf8validator (Python 2), which
 * wstest uses to check every text message it receives. wsaccel's is
 * Cython whose loop goes through Python objects byte by byte (~3 MB/s
 * here): it made wstest, not the server, the bound of the text cases
 * (12.1.x, 12.4.x, 13.x, 9.x: three quarters of `autobahn.sh quick`).
 * This is the same DFA (Bjoern Hoehrmann's, as in wsaccel's dfa.h), the
 * same API and the same results, in a plain C loop. scripts/lib/
 * autobahn-setup.sh builds it and installs it only after
 * autobahn-utf8check.py found it answering exactly as wsaccel's does.
 */
#include <Python.h>
#include <structmember.h>

#define UTF8_ACCEPT 0
#define UTF8_REJECT 1

static const unsigned char UTF8VALIDATOR_DFA[] = {
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, /* 00..1f */
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, /* 20..3f */
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, /* 40..5f */
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, /* 60..7f */
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9, /* 80..9f */
    7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7, /* a0..bf */
    8,8,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2, /* c0..df */
    0xa,0x3,0x3,0x3,0x3,0x3,0x3,0x3,0x3,0x3,0x3,0x3,0x3,0x4,0x3,0x3, /* e0..ef */
    0xb,0x6,0x6,0x6,0x5,0x8,0x8,0x8,0x8,0x8,0x8,0x8,0x8,0x8,0x8,0x8, /* f0..ff */
    0x0,0x1,0x2,0x3,0x5,0x8,0x7,0x1,0x1,0x1,0x4,0x6,0x1,0x1,0x1,0x1, /* s0..s0 */
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,0,1,1,1,1,1,0,1,0,1,1,1,1,1,1, /* s1..s2 */
    1,2,1,1,1,1,1,2,1,2,1,1,1,1,1,1,1,1,1,1,1,1,1,2,1,1,1,1,1,1,1,1, /* s3..s4 */
    1,2,1,1,1,1,1,1,1,2,1,1,1,1,1,1,1,1,1,1,1,1,1,3,1,3,1,1,1,1,1,1, /* s5..s6 */
    1,3,1,1,1,1,1,3,1,3,1,1,1,1,1,1,1,3,1,1,1,1,1,1,1,1,1,1,1,1,1,1  /* s7..s8 */
};

typedef struct {
    PyObject_HEAD
    int i;
    int state;
    int codepoint;
} Validator;

static PyObject *v_reset(Validator *self, PyObject *unused) {
    self->state = UTF8_ACCEPT;
    self->codepoint = 0;
    self->i = 0;
    Py_RETURN_NONE;
}

static int v_init(Validator *self, PyObject *args, PyObject *kwds) {
    if (!PyArg_ParseTuple(args, ":Utf8Validator")) return -1;
    self->state = UTF8_ACCEPT;
    self->codepoint = 0;
    self->i = 0;
    return 0;
}

/* Eat one octet (an int); the new state. */
static PyObject *v_decode(Validator *self, PyObject *arg) {
    long b = PyInt_AsLong(arg);
    int type;
    if (b == -1 && PyErr_Occurred()) return NULL;
    if (b < 0 || b > 255) {
        PyErr_SetString(PyExc_ValueError, "an octet is 0..255");
        return NULL;
    }
    type = UTF8VALIDATOR_DFA[b];
    if (self->state != UTF8_ACCEPT)
        self->codepoint = (int)((b & 0x3f) | (self->codepoint << 6));
    else
        self->codepoint = (int)((0xff >> type) & b);
    self->state = UTF8VALIDATOR_DFA[256 + self->state * 16 + type];
    return PyInt_FromLong(self->state);
}

/* (valid, ends on a code point, octets consumed now, in all) */
static PyObject *v_validate(Validator *self, PyObject *arg) {
    Py_buffer view;
    const unsigned char *p;
    Py_ssize_t n, k;
    int state = self->state;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    p = (const unsigned char *)view.buf;
    n = view.len;
    for (k = 0; k < n; k++) {
        state = UTF8VALIDATOR_DFA[256 + (state << 4) + UTF8VALIDATOR_DFA[p[k]]];
        if (state == UTF8_REJECT) {
            PyBuffer_Release(&view);
            self->i += (int)k;
            self->state = state;
            return Py_BuildValue("(OOii)", Py_False, Py_False, (int)k, self->i);
        }
    }
    PyBuffer_Release(&view);
    self->i += (int)n;
    self->state = state;
    return Py_BuildValue("(OOii)", Py_True, state == UTF8_ACCEPT ? Py_True : Py_False,
                         (int)n, self->i);
}

static PyMethodDef v_methods[] = {
    {"reset", (PyCFunction)v_reset, METH_NOARGS, "Start a new validation."},
    {"decode", (PyCFunction)v_decode, METH_O, "Eat one octet; the new state."},
    {"validate", (PyCFunction)v_validate, METH_O,
     "Validate a chunk: (valid, endsOnCodePoint, currentIndex, totalIndex)."},
    {NULL, NULL, 0, NULL}
};

static PyMemberDef v_members[] = {
    {"i", T_INT, offsetof(Validator, i), 0, NULL},
    {"state", T_INT, offsetof(Validator, state), 0, NULL},
    {"codepoint", T_INT, offsetof(Validator, codepoint), 0, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyTypeObject ValidatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    "wsaccel.utf8validator.Utf8Validator", /* tp_name */
    sizeof(Validator),                     /* tp_basicsize */
};

PyMODINIT_FUNC initutf8validator(void) {
    PyObject *m;
    ValidatorType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE;
    ValidatorType.tp_doc = "Incremental UTF-8 validator (C; same results as wsaccel 0.6.3's).";
    ValidatorType.tp_methods = v_methods;
    ValidatorType.tp_members = v_members;
    ValidatorType.tp_init = (initproc)v_init;
    ValidatorType.tp_new = PyType_GenericNew;
    if (PyType_Ready(&ValidatorType) < 0) return;
    PyDict_SetItemString(ValidatorType.tp_dict, "UTF8_ACCEPT", PyInt_FromLong(UTF8_ACCEPT));
    PyDict_SetItemString(ValidatorType.tp_dict, "UTF8_REJECT", PyInt_FromLong(UTF8_REJECT));
    m = Py_InitModule3("utf8validator", NULL, "Incremental UTF-8 validation for wstest.");
    if (m == NULL) return;
    Py_INCREF(&ValidatorType);
    PyModule_AddObject(m, "Utf8Validator", (PyObject *)&ValidatorType);
}
