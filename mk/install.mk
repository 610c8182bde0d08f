# make install / make uninstall for flux-pam-service (included by Makefile).
#
#   make install   [DESTDIR=] [PREFIX=/usr] [SYSCONFDIR=/etc] [LIBEXECDIR=...]
#   make uninstall (same variables: removes exactly what install put there)
#
# Nothing is fetched: the package is copied, not built with pip.  The layout
# is in doc/guide/admin.rst ("Installing").  Variables:
#
#   PREFIX          /usr
#   SYSCONFDIR      /etc
#   LIBEXECDIR      $(PREFIX)/libexec     flux's libexecdir is $(LIBEXECDIR)/flux
#   DATADIR         $(PREFIX)/share
#   MANDIR          $(DATADIR)/man
#   PYTHON          /usr/bin/python3      the Python flux and the drop-ins run
#                                         (Debian's); set on the command line
#                                         only: a PYTHON in the environment (a
#                                         virtualenv's) is not used
#   PYTHONDIR       where PYTHON finds packages for PREFIX (mk/pythondir.py)
#   FLUXLIBEXECDIR  $(LIBEXECDIR)/flux    cmd/, prolog.d/, housekeeping.d/,
#                                         modprobe/rc1.d/
#   FLUXDATADIR     $(DATADIR)/flux       modprobe/modprobe.d/
#   FLUXMODDIR      $(PREFIX)/lib/flux/modules   pam.py, the broker module
#                                         (flux's module_path: `flux modprobe`
#                                         loads `pam` by name from there)
#   FLUXCONFDIR     $(SYSCONFDIR)/flux    system/conf.d/pam.toml
#   PAMDIR          the system's PAM module directory, found by pam/Makefile
#                   (pam_flux.so; see there, and for flux-core's discovery)
#   TMPFILESDIR     $(PREFIX)/lib/tmpfiles.d
#   POLKITRULESDIR  $(DATADIR)/polkit-1/rules.d  (polkitd reads only
#                   /usr/share/polkit-1/rules.d and /etc/polkit-1/rules.d)
#   DOCDIR          $(DATADIR)/doc/flux-pam-service   (examples/ below it)
#   RST2MAN         rst2man               (Debian: python3-docutils)
#
# flux finds `flux pam` only if FLUXLIBEXECDIR is its own libexecdir (or is
# in FLUX_EXEC_PATH); for a flux-core installed in /opt/flux use
# LIBEXECDIR=/opt/flux/libexec, FLUXDATADIR=/opt/flux/share/flux and
# FLUXMODDIR=/opt/flux/lib/flux/modules.
#
# $(FLUXCONFDIR)/system/conf.d/pam.toml is installed only if absent; uninstall
# removes it only if it is unchanged.  Paths must not contain blanks or commas.

PREFIX ?= /usr
SYSCONFDIR ?= /etc
LIBEXECDIR ?= $(PREFIX)/libexec
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
PYTHON = /usr/bin/python3
PYTHONDIR ?= $(shell $(PYTHON) $(CURDIR)/mk/pythondir.py $(PREFIX))
FLUXLIBEXECDIR ?= $(LIBEXECDIR)/flux
FLUXDATADIR ?= $(DATADIR)/flux
FLUXMODDIR ?= $(PREFIX)/lib/flux/modules
FLUXCONFDIR ?= $(SYSCONFDIR)/flux
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
POLKITRULESDIR ?= $(DATADIR)/polkit-1/rules.d
DOCDIR ?= $(DATADIR)/doc/flux-pam-service
EXAMPLESDIR ?= $(DOCDIR)/examples
RST2MAN ?= rst2man

BUILDDIR = $(CURDIR)/build

PY_SOURCES := $(sort $(shell find flux_pam_service -name '*.py' \
                               -not -path '*/__pycache__/*' 2>/dev/null))
MODPROBE_TOML := $(sort $(wildcard etc/flux/modprobe/modprobe.d/*.toml))
MODPROBE_RC1 := $(sort $(wildcard etc/flux/modprobe/rc1.d/*.py))
MODPROBE_RC3 := $(sort $(wildcard etc/flux/modprobe/rc3.d/*.py))
MAN_PAGES := $(BUILDDIR)/man/flux-pam.1 $(BUILDDIR)/man/flux-config-pam.5 \
             $(BUILDDIR)/man/pam_flux.8
CONF_EXAMPLE = etc/flux/system/conf.d/pam.toml
CONF_DEST = $(FLUXCONFDIR)/system/conf.d/pam.toml

# source,destination,mode: every file install copies (except CONF_DEST).
INSTALL_TABLE = \
  $(foreach f,$(PY_SOURCES),$(f),$(PYTHONDIR)/$(f),0644) \
  $(BUILDDIR)/flux-pam.py,$(FLUXLIBEXECDIR)/cmd/flux-pam.py,0755 \
  libexec/prolog.d/flux-pam-prolog,$(FLUXLIBEXECDIR)/prolog.d/flux-pam-prolog,0755 \
  libexec/housekeeping.d/flux-pam-housekeeping,$(FLUXLIBEXECDIR)/housekeeping.d/flux-pam-housekeeping,0755 \
  flux_pam_service/brokermod/pam.py,$(FLUXMODDIR)/pam.py,0644 \
  $(foreach f,$(MODPROBE_TOML),$(f),$(FLUXDATADIR)/modprobe/modprobe.d/$(notdir $(f)),0644) \
  $(foreach f,$(MODPROBE_RC1),$(f),$(FLUXLIBEXECDIR)/modprobe/rc1.d/$(notdir $(f)),0644) \
  $(foreach f,$(MODPROBE_RC3),$(f),$(FLUXLIBEXECDIR)/modprobe/rc3.d/$(notdir $(f)),0644) \
  etc/tmpfiles.d/flux-pam.conf,$(TMPFILESDIR)/flux-pam.conf,0644 \
  etc/polkit-1/rules.d/60-flux-pam.rules,$(POLKITRULESDIR)/60-flux-pam.rules,0644 \
  $(CONF_EXAMPLE),$(EXAMPLESDIR)/pam.toml,0644 \
  etc/flux/system/perilog.toml,$(EXAMPLESDIR)/perilog.toml,0644 \
  etc/flux/imp/conf.d/pam.toml,$(EXAMPLESDIR)/imp-pam.toml,0644 \
  etc/pam.d/sshd,$(EXAMPLESDIR)/pam.d-sshd,0644 \
  etc/security/access-flux.conf,$(EXAMPLESDIR)/access-flux.conf,0644 \
  doc/guide/admin.rst,$(DOCDIR)/admin-guide.rst,0644 \
  $(BUILDDIR)/man/flux-pam.1,$(MANDIR)/man1/flux-pam.1,0644 \
  $(BUILDDIR)/man/flux-config-pam.5,$(MANDIR)/man5/flux-config-pam.5,0644 \
  $(BUILDDIR)/man/pam_flux.8,$(MANDIR)/man8/pam_flux.8,0644

# Directories that are ours alone: uninstall removes them once empty.
OWN_DIRS = $(EXAMPLESDIR) $(DOCDIR)

.PHONY: install uninstall man install-check-sources

man: $(MAN_PAGES)

$(BUILDDIR)/man/%.1: doc/man1/%.rst
	@mkdir -p $(@D)
	$(RST2MAN) --halt=warning --syntax-highlight=none $< $@

$(BUILDDIR)/man/%.5: doc/man5/%.rst
	@mkdir -p $(@D)
	$(RST2MAN) --halt=warning --syntax-highlight=none $< $@

$(BUILDDIR)/man/%.8: doc/man8/%.rst
	@mkdir -p $(@D)
	$(RST2MAN) --halt=warning --syntax-highlight=none $< $@

# Rebuilt every time: it records PYTHONDIR, which may differ between runs.
$(BUILDDIR)/flux-pam.py: libexec/cmd/flux-pam.py.in FORCE
	@mkdir -p $(@D)
	sed 's|@PYTHONDIR@|$(PYTHONDIR)|g' $< > $@

FORCE:

# Refuse to install half a product: every source must be there.
install-check-sources:
	@test -n "$(MODPROBE_TOML)" || { echo "install: no etc/flux/modprobe/modprobe.d/*.toml" >&2; exit 1; }
	@test -n "$(MODPROBE_RC1)" || { echo "install: no etc/flux/modprobe/rc1.d/*.py" >&2; exit 1; }
	@missing=; for t in $(INSTALL_TABLE); do src=$${t%%,*}; \
	  case $$src in $(BUILDDIR)/*) continue;; esac; \
	  test -f "$$src" || missing="$$missing $$src"; done; \
	 if test -n "$$missing"; then echo "install: missing source files:$$missing" >&2; exit 1; fi

install: install-check-sources $(BUILDDIR)/flux-pam.py $(MAN_PAGES)
	@set -e; for t in $(INSTALL_TABLE); do \
	  src=$${t%%,*}; rest=$${t#*,}; dst=$${rest%,*}; mode=$${rest##*,}; \
	  mkdir -p "$(DESTDIR)$$(dirname $$dst)"; \
	  echo "  INSTALL $$dst"; \
	  install -m $$mode "$$src" "$(DESTDIR)$$dst"; \
	done
	@# bytecode for the drop-ins, which the IMP runs for every job, also on a
	@# read-only /usr; checked-hash survives mtime changes
	@echo "  PYC     $(PYTHONDIR)/flux_pam_service"
	@$(PYTHON) -m compileall -q --invalidation-mode checked-hash \
	  -d "$(PYTHONDIR)/flux_pam_service" "$(DESTDIR)$(PYTHONDIR)/flux_pam_service"
	@if test -e "$(DESTDIR)$(CONF_DEST)"; then \
	  echo "  KEEP    $(CONF_DEST) (exists; the shipped one is $(EXAMPLESDIR)/pam.toml)"; \
	else \
	  mkdir -p "$(DESTDIR)$(dir $(CONF_DEST))"; \
	  echo "  INSTALL $(CONF_DEST)"; \
	  install -m 0644 $(CONF_EXAMPLE) "$(DESTDIR)$(CONF_DEST)"; \
	fi
	@$(MAKE) --no-print-directory -C pam install DESTDIR="$(DESTDIR)"

uninstall:
	@$(MAKE) --no-print-directory -C pam uninstall DESTDIR="$(DESTDIR)"
	@for t in $(INSTALL_TABLE); do \
	  rest=$${t#*,}; dst=$${rest%,*}; \
	  if test -e "$(DESTDIR)$$dst" || test -L "$(DESTDIR)$$dst"; then \
	    echo "  RM      $$dst"; rm -f "$(DESTDIR)$$dst"; fi; \
	done
	@if test -d "$(DESTDIR)$(PYTHONDIR)/flux_pam_service"; then \
	  echo "  RM      $(PYTHONDIR)/flux_pam_service"; \
	  rm -rf "$(DESTDIR)$(PYTHONDIR)/flux_pam_service"; fi
	@if test -f "$(DESTDIR)$(CONF_DEST)"; then \
	  if cmp -s $(CONF_EXAMPLE) "$(DESTDIR)$(CONF_DEST)"; then \
	    echo "  RM      $(CONF_DEST)"; rm -f "$(DESTDIR)$(CONF_DEST)"; \
	  else echo "  KEEP    $(CONF_DEST) (changed locally)"; fi; fi
	@for d in $(OWN_DIRS); do rmdir "$(DESTDIR)$$d" 2>/dev/null || :; done
