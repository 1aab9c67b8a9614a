"""The course machinery for instructors and learners' feedback, apart from what the lessons teach.

- :mod:`.exercises`: exercise notebooks generated from the solution notebooks (``make exercises``), and running
  notebooks with nbclient (``make notebooks``, the tests, the bench and the grader);
- :mod:`.grading`: ``python -m helpers grade DIR``, a folder of submissions to ``grades.csv`` and feedback;
- :mod:`.checks`: the checks the exercise notebooks call (``from helpers import checks`` reaches them).

Nothing that a lesson teaches imports this folder: only the command line, the benchmark (it times grading) and the
package's ``checks`` name do.
"""

RECORD_ENV = "HELPERS_CHECK_RECORD"  # set in a graded notebook's kernel: where the checks record the learner's outputs
