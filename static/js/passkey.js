/* Passkeys, as progressive enhancement. A button marked data-passkey-button asks our server for
 * the options of a passkey request (POSTing its form, CSRF token included), hands them to the
 * browser (navigator.credentials.get or .create, as the form's data-passkey says), puts the
 * browser's answer in the form's data-passkey-field and submits the form: the server checks
 * everything. Without JavaScript or WebAuthn the buttons stay hidden and the page's
 * data-passkey-unsupported text (shown by default) offers the code channels instead. All
 * wording comes from the page, in the page's language. ES5 apart from Promises, which every
 * browser with WebAuthn has. */
(function () {
  "use strict";

  var supported = !!(
    window.PublicKeyCredential &&
    navigator.credentials &&
    window.fetch &&
    window.FormData
  );

  function each(selector, action) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), action);
  }

  function fromBase64url(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) {
      base64 += "=";
    }
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i += 1) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map(function (descriptor) {
      var copy = Object.assign({}, descriptor);
      copy.id = fromBase64url(descriptor.id);
      return copy;
    });
  }

  function publicKeyOptions(mode, json) {
    var options = Object.assign({}, json);
    options.challenge = fromBase64url(json.challenge);
    if (mode === "create") {
      options.user = Object.assign({}, json.user, { id: fromBase64url(json.user.id) });
      options.excludeCredentials = withIds(json.excludeCredentials);
    } else {
      options.allowCredentials = withIds(json.allowCredentials);
    }
    return options;
  }

  function answerJson(credential) {
    if (typeof credential.toJSON === "function") {
      return credential.toJSON();
    }
    var response = credential.response;
    var answer = { clientDataJSON: toBase64url(response.clientDataJSON) };
    if (response.attestationObject) {
      answer.attestationObject = toBase64url(response.attestationObject);
      answer.transports = response.getTransports ? response.getTransports() : [];
    } else {
      answer.authenticatorData = toBase64url(response.authenticatorData);
      answer.signature = toBase64url(response.signature);
      if (response.userHandle) {
        answer.userHandle = toBase64url(response.userHandle);
      }
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: answer,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  function say(form, text) {
    var box = form.querySelector("[data-passkey-message]");
    if (box) {
      box.textContent = text;
      box.hidden = !text;
    }
  }

  function ceremony(form, button) {
    var mode = form.getAttribute("data-passkey");
    var failed = form.getAttribute("data-passkey-error") || "";
    button.disabled = true;
    say(form, "");
    fetch(form.getAttribute("data-options-url"), {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (reply) {
        return reply.json().catch(function () {
          return { message: failed };
        });
      })
      .then(function (reply) {
        if (reply.redirect) {
          window.location.assign(reply.redirect);
          return null;
        }
        if (!reply.options) {
          throw new Error(reply.message || failed);
        }
        var publicKey = publicKeyOptions(mode, reply.options);
        var asked =
          mode === "create"
            ? navigator.credentials.create({ publicKey: publicKey })
            : navigator.credentials.get({ publicKey: publicKey });
        return asked.catch(function () {
          /* cancelled, timed out, or no passkey for this site on this device */
          throw new Error(failed);
        });
      })
      .then(function (credential) {
        if (!credential) {
          return;
        }
        form.querySelector("[data-passkey-field]").value = JSON.stringify(answerJson(credential));
        form.submit();
      })
      .catch(function (error) {
        button.disabled = false;
        say(form, error.message || failed);
      });
  }

  function start() {
    if (!supported) {
      return;
    }
    each("[data-passkey-unsupported]", function (element) {
      element.hidden = true;
    });
    each("[data-passkey-supported]", function (element) {
      element.hidden = false;
    });
    each("[data-passkey-button]", function (button) {
      button.addEventListener("click", function (event) {
        event.preventDefault();
        ceremony(button.form, button);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
