"""Settings and logging set-up for every racewire process: the bottom layer, imported by every
package that needs a setting, itself importing no racewire package.

- :mod:`config.settings`: the one :class:`~config.settings.Settings` object, read from ``RACEWIRE_*``
  environment variables (every variable of the project is a field there);
- :mod:`config.logs`: :func:`~config.logs.configure`, called once at start-up.
"""
